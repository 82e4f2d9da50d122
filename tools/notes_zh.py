"""Chinese twins of the bundled workflows' Notes (tools/build_workflows.py puts each beside its English Note)."""

NOTE_TXT2IMG_ZH = """Lune（SD1.5 整流/流匹配模型）配合原生 KSampler。

1. model_name 选 '[download] AbstractPhil/sd15-flow-lune' 会下载作者的 sd15_flow_lune_e52_s52000.pt
   （约 10 GB，只下载一次；取消会保留已下载的部分，下次运行接着下载）。也可以选自己的 Lune 文件：
   models/diffusion_models（diffusers unet/ 文件夹或训练 .pt）或 models/checkpoints（单文件）。
   只有 UNet 的文件需要 CLIP+VAE：clip_vae_from 选 '[download] Comfy-Org/stable-diffusion-v1-5-archive'
   会把 SD1.5 下载到 models/checkpoints（也可以选你已有的任意 SD1.5 检查点）。
2. “加载 Lune 模型”已设置好流匹配采样（偏移 2.0，训练范围 2.0–2.5），不需要 ModelSamplingSD3。
3. 采样器：euler 或 lune_euler；调度器：simple/normal/beta 或 lune_flow（作者的网格）。
   不要用 karras、exponential、linear_quadratic：它们忽略偏移。
4. 作者设置：20–30 步，CFG 7.5，512x512，负向提示词留空。
5. “Lune 潜空间乘数”：variant default 对 lune 为自动估计，对 lune-flux 为 1.0；变体 auto 找不到名称时
   也是 1.0（日志会提示：请手动选择变体）。图像太亮或像素化？改用 fixed 并调低乘数。"""

NOTE_FLUX_ZH = """Lune-Flux（AbstractPhil/sd15-flow-lune-flux）：推荐使用的 Lune，按作者的方式采样。

1. model_name '[download] AbstractPhil/sd15-flow-lune-flux' 会把作者的 UNet 下载到
   models/diffusion_models/AbstractPhil_sd15-flow-lune-flux/；clip_vae_from '[download] Comfy-Org/
   stable-diffusion-v1-5-archive' 会下载 SD1.5 作为 CLIP+VAE。也可以选自己的文件。
2. 变体 lune-flux（显式指定，不靠猜测），偏移 2.0（训练范围 2.0–2.5）。
3. lune_euler + lune_flow = 作者的欧拉采样，sigma_i = shift(1 - i/N)，最后精确到 0。
   euler + simple 的网格几乎相同。
4. 25 步，CFG 7.5，512x512，负向提示词留空。
5. lune-flux 不需要潜空间乘数（variant default = 1.0）。"""

NOTE_SOL_ZH = """Sol（AbstractPhil/sd15-flow-matching）：不是整流模型。

Sol 是 SD1.5 离散调度上的 v 预测。“加载 Lune 模型”选变体 sol 即可
（sol 忽略偏移控件；作者默认不偏移）。
- model_name '[download] AbstractPhil/sd15-flow-matching' 会下载仓库中最新一轮的训练状态
  （日志会写出文件名）；clip_vae_from 会下载 SD1.5 作为 CLIP+VAE。
- 采样器 lune_euler + 调度器 lune_flow = 作者在 trailing 离散网格上的欧拉采样。
- 20 步，CFG 7.5，512x512（作者设置）。不要添加“Lune 流偏移”（它会拒绝 Sol）。
- 按作者本人的说法，画质一般。"""

NOTE_IMG2IMG_ZH = """Lune 图生图：对已有图片以部分降噪重新绘制。

1. 加载图像：选择你的图片（example.png 是 ComfyUI 自带在 input/ 里的）。
2. 缩放到 512x512（Lune 的训练尺寸），用 Lune 的 VAE 编码。
3. KSampler 降噪 0.6：保留构图，改变细节（0.3 变化很小，0.8 几乎全新）。
   降噪 < 1 时流匹配网格的截取方式与 KSampler 相同（取更长网格的最后几步）。
4. euler + simple（或 lune_euler + lune_flow），25 步，CFG 7.5，偏移 2.0。"""

NOTE_ADAPTER_ZH = """Lune 采样器适配 + SamplerCustomAdvanced。

“Lune 采样器适配”输出作者的采样器（欧拉 ODE）以及它的 sigmas：
sigma_i = shift(1 - i/N)，最后精确到 0，偏移从模型中读取。
把 SAMPLER 和 SIGMAS 接到 SamplerCustomAdvanced；RandomNoise 提供种子，
CFGGuider 提供 CFG（7.5）。不需要 KSamplerSelect / BasicScheduler。
同样的连法也适用于 SamplerCustom 或 RES4LYF 的 SharkSampler。"""

NOTE_RES4LYF_ZH = """Lune + RES4LYF（ClownsharKSampler_Beta）。需要安装 RES4LYF 节点包
（ComfyUI 0.3.75 请用 RES4LYF 提交 a91beac；最新版需要更新的 ComfyUI）。

- “加载 Lune 模型”已把模型设为流匹配模型（CONST，sigma_max 1）：RES4LYF 自带的
  ModelSamplingAdvanced 不支持 SD1.5，不要添加。
- eta 0.5，采样器 multistep/res_2m，调度器 beta57，25 步，CFG 7.5，bongmath 开启。
- options 保持不连接（默认值）。"""

NOTE_LYRA_ZH = """Lune + Lyra（AbstractPhil/vae-lyra）：用 Lyra 融合 CLIP-L 和 t5-base，送入 SD1.5 UNet。

1. “加载 Lyra” '[download] AbstractPhil/vae-lyra' 在第一次运行时把 model.pt 和 config.json 下载到
   models/lyra/AbstractPhil_vae-lyra/（也可以自己放进去）。
2. 加载 CLIP：t5-base 编码器，类型选 stable_audio（models/text_encoders 里的 t5_base.safetensors；
   浏览器会把 google-t5/t5-base 的文件存成 model.safetensors：请改名）。不要用 T5-XXL（Flux/SD3 用的）：
   Lyra 是用 t5-base（768 维）训练的。
3. 正向和负向都用“Lyra 编码”（空的负向提示词也要经过 Lyra，和作者一样）。
   不要用 clip-skip（CLIP Set Last Layer）：Lyra 训练时用的是 CLIP-L 的最后一层。
4. mode 选 mean 结果确定；sample 是作者的随机 z（由种子决定）。strength 1 = 作者的做法，
   0 = 普通 CLIP。T5 收到的提示词会去掉 (词:1.2) 权重并截断到 77 个词元；超过 77 个 CLIP 词元的
   部分保持普通 CLIP。
5. 采样设置与 Lune-Flux 相同：25 步，CFG 7.5，euler + simple，512x512。"""

NOTE_INSTAFLOW_ZH = """InstaFlow（gnobitab/InstaFlow）：用整流（Rectified Flow）把 SD1.5 变成一步/少步生成器。
权重许可 CC-BY-NC-4.0（非商业）+ CreativeML Open RAIL-M；代码 MIT。

1. model_name '[download] XCLiu/instaflow_0_9B_from_sd_1_5 (CC-BY-NC-4.0, non-commercial)' 会把 unet/
   文件夹（.safetensors 或 .bin）下载到 models/diffusion_models/XCLiu_instaflow_0_9B_from_sd_1_5/；
   2_rectified_flow_from_sd_1_5 条目下载 2-Rectified Flow。clip_vae_from 会下载 SD1.5。
2. 变体 instaflow（模型输出 x0 - 噪声，与 Lune 符号相反；auto 也能从文件夹名识别）。
   shift 0 = 该变体训练时的偏移，即 1.0（不偏移）。
3. InstaFlow-0.9B：1 步，CFG 1.0（如本模板）。2-Rectified Flow：25 步（2–8 步可用），CFG 1.0–2.0，
   CFG > 1 时负向提示词有效。
4. lune_euler + lune_flow = 作者在 sigma_i = 1 - i/N 上的欧拉采样；euler + simple 是同一网格。"""

NOTE_SDXL_TO_LUNE_ZH = """SDXL 负责构图，Lune 负责细化：用“Lune 潜空间交接”连接两个模型家族。

1. 加载检查点：你的 SDXL 检查点（1024x1024，euler + normal，25 步，CFG 7）。
2. Lune 潜空间交接：用 SDXL 的 VAE 解码，缩放（scale 0.5：1024 -> 512 像素，Lune 的训练尺寸；
   总是 8 的倍数），再用 Lune 的 VAE 编码。SDXL 和 SD1.5 的潜空间都是 4 通道，但不是同一个空间：
   千万不要直接连接。
3. Lune 的 KSampler 降噪 0.5：保留 SDXL 的构图，重绘细节（0.3 轻微，0.7 强烈）。
   Lune 设置照常：euler + simple，偏移 2.0，CFG 7.5。
4. 在 VAE 解码（Lune 的 VAE）之前接“Lune 潜空间乘数”（variant default）。"""

NOTE_LUNE_TO_SDXL_ZH = """Lune 负责构图，SDXL 负责细化：用“Lune 潜空间交接”连接两个模型家族。

1. 加载 Lune 模型：Lune 512x512（euler + simple，25 步，CFG 7.5，偏移 2.0）。
2. 在交接之前先接“Lune 潜空间乘数”：交接会解码潜空间，所以必须先校正。
3. Lune 潜空间交接：用 Lune 的 VAE 解码，scale 2.0（512 -> 1024 像素，SDXL 的尺寸；总是 8 的倍数），
   再用 SDXL 检查点的 VAE 编码。
4. SDXL 的 KSampler 降噪 0.4（0.25 轻微，0.6 强烈），euler + normal，CFG 7；用 SDXL 的 VAE 解码。"""

NOTE_DISCRETE_ZH = """SDXL v 预测 + 零终端信噪比（SQCU/sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr）。

这个模型被重新训练到 ComfyUI 无法从文件得知的调度上：
v 预测，scaled_linear beta 0.00085 -> 0.024（原版 0.012），并重缩放为零终端信噪比（ZTSNR）。
“Lune 离散调度”在模型上精确设置这些；原生 ModelSamplingDiscrete 节点没有 beta 输入。
1. “加载检查点（Lune 下载）” '[download] SQCU/...' 会把仓库里的单文件检查点下载到
   models/checkpoints/SQCU_.../（也可以选你自己的检查点）；CLIP 和 VAE 来自文件。
2. Lune 离散调度：v_prediction，scaled_linear，0.00085，0.024，zero_terminal_snr 开启
   （日志会说明文件被加载成什么）。timestep_label_shift 保持 0。
3. KSampler：euler + simple（= diffusers 的 'trailing' 间隔：第一步是纯噪声），25 步。
   CFG 5；颜色过饱和就调低，或在 KSampler 前加 RescaleCFG（0.7）（Lin 等，2023）。
   避免 heun/dpm2：据报告依赖 sigma_max 的采样器在 ZTSNR 调度上会崩坏。
4. 其他重新训练的模型请用其模型卡上的 beta；只有训练时用了 ZTSNR 才开启 zero_terminal_snr。"""

NOTE_MERGE_ZH = """Lune 模型合并：把多个 Lune/SD1.5 检查点合并成一个新检查点，再按 Lune 采样。

1. 把检查点放进 models/checkpoints。base_name = theta0，这里是 SD1.5（v1-5-pruned-emaonly-fp16：
   缺失模型对话框会提供下载）；models = 每行一个文件名或通配符（相对于 models/checkpoints；
   匹配到基础模型时会跳过），例如单文件的 Lune 微调模型。
2. 方法 tgmd = AstolfoMix-XL 的配方：DROP p=0.1（由种子决定）、TIES-SOUP 符号投票、几何中位数，
   强度 1.0。也可选 ties（density < 1 时裁剪）、ties_soup、dare/drop、geometric_median、task_arithmetic。
3. 内存不超过 memory_budget_gib（默认 2 GiB），与模型数量无关：每个张量只读取每个模型一次；几何中位数的
   迭代在 N x N 的 Gram 矩阵上进行（stop 为 precision 时，输出精度不再变化即停止）。dropout_seed 决定 DROP 掩码。
4. 写入 models/checkpoints/<output_name>.safetensors（配方保存在元数据中）。以相同配方再次运行时直接复用该文件
   （不再合并）；同名但配方不同会被拒绝并保留原文件：请更换 output_name。clip_vae_from：从另一个检查点取
   CLIP/VAE（用于仅含 UNet 的文件）。
5. 接“Lune 流偏移” 2.0，让合并后的 SD1.5 按整流模型采样；euler + simple，25 步，CFG 7.5。"""

NOTE_SDXL_LYRA_ZH = """SDXL + Lyra-XL（AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious）：用 Lyra 融合 CLIP-L、
CLIP-G 和 flan-t5-xl，连同原来的 pooled 输出送入 SDXL UNet。

1. 加载检查点：一个 SDXL 检查点（这里是 sd_xl_base_1.0；该模型是为 Illustrious 风格的 SDXL 训练的，
   Illustrious 检查点效果最好）。
2. “加载 Lyra T5-XL”：选 '[download] QQGYLab/ELLA flan-t5-xl'，一次性下载 flan-t5-xl 编码器
   （fp16，2.95 GB）。不要用原生“加载 CLIP”加载 flan-t5-xl：它会被当成 AuraFlow 的 Pile-T5。
3. “加载 Lyra”：选 '[download] AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious'，下载
   weights/lyra_best.safetensors 和 config.json。其他 SDXL Lyra 也用同样方式加载。
4. 正向和负向都用“Lyra 编码 SDXL”。clip_layer 选 auto = 模型训练时用的层（Illustrious：原生 SDXL
   编码，倒数第二层）。strength 1 = 作者的输出，0 = 普通 SDXL 条件。mode 选 mean 结果确定。
   超过 77 个 CLIP 词元的部分保持普通 CLIP。
5. 采样设置与普通 SDXL 相同：1024x1024，euler + normal，25 步，CFG 7。"""
